//! `ctl token`: API tokens with a role, for people and programs other than the owner: create
//! (prints the token once, alone on the last line), ls (never a token's value), revoke.

use std::time::Duration;

use celistra_client::Client;
use celistra_proto::{Role, TokenCreated, TokenInfo, TokenRequest};
use clap::{Args, Subcommand};

use super::table::{clock, compact_duration, now_ms, render};
use super::{CtlResult, print_json};

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Make a token; prints it once (its last line is the token alone). Only an owner may.
    Create {
        /// owner, operator, viewer or approver.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A unique name: 1 to 64 of a-z, 0-9, `.`, `_`, `-`.
        #[arg(long)]
        name: String,
        /// How long it works (`30d`, `12h`, `90m`); without it, until revoked.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Duration>,
        /// Print JSON (`token` and `info`) instead.
        #[arg(long)]
        json: bool,
    },
    /// List tokens: name, role, created, expires, last used; never the value.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once, closing its open event streams and terminals.
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn parse_expiry(text: &str) -> Result<Duration, String> {
    let millis = celistra_core::duration::parse_millis(text)
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 30d, 12h or 90m"))?;
    if millis < 1000 {
        return Err("a token must last at least a second".into());
    }
    Ok(Duration::from_millis(millis))
}

pub(crate) async fn run(client: &Client, args: TokenArgs) -> CtlResult {
    match args.action {
        Action::Create {
            role,
            name,
            expires,
            json,
        } => {
            let request = TokenRequest {
                name,
                role,
                expires_in_secs: expires.map(|d| d.as_secs()),
            };
            let created: TokenCreated = client.create_token(&request).await?;
            if json {
                print_json(&created);
            } else {
                let expiry = created.info.expires_at_ms.map_or_else(
                    || "until revoked".to_owned(),
                    |at| format!("until {}", clock(at)),
                );
                eprintln!(
                    "Token `{}` ({}, {expiry}). It is shown only now: keep it in a secret store. \
                     Use it as CELISTRA_TOKEN or `Authorization: Bearer <token>`.",
                    created.info.name, created.info.role
                );
                println!("{}", created.token);
            }
            Ok(())
        }
        Action::Ls { json } => {
            let tokens: Vec<TokenInfo> = client.list_tokens().await?;
            if json {
                print_json(&tokens);
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.to_string(),
                        clock(t.created_at_ms),
                        match t.expires_at_ms {
                            None => "never".into(),
                            Some(at) if at <= now => "expired".into(),
                            Some(at) => format!("in {}", compact_duration(at - now)),
                        },
                        t.last_used_ms.map_or_else(
                            || "never".into(),
                            |at| format!("{} ago", compact_duration(now.saturating_sub(at))),
                        ),
                        t.created_by.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                render(
                    &["NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "BY"],
                    &rows
                )
            );
            Ok(())
        }
        Action::Revoke { name, json } => {
            let revoked: TokenInfo = client.revoke_token(&name).await?;
            if json {
                print_json(&revoked);
            } else {
                println!("revoked {} ({})", revoked.name, revoked.role);
            }
            Ok(())
        }
    }
}

//! `ctl top`: a live view of the agents, like `pm2 monit`: a table (state, CPU, memory, restarts,
//! uptime) refreshed from the API every second, and the selected agent's last lines of output
//! below it. Arrows (or `j`/`k`) select, `q`, Esc or Ctrl-C quit. Drawing is a pure function of a
//! [`Screen`], so it is tested on ratatui's `TestBackend`.

use std::io::IsTerminal;
use std::time::Duration;

use celistra_client::{Client, next_chunk};
use celistra_proto::{AgentInfo, LogsQuery};
use clap::Args;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::agents::{cpu_text, memory_text};
use super::table::uptime_text;
use super::{CtlResult, Failure};

/// How often the agents and the selected agent's output are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Lines of the selected agent's output shown.
const OUTPUT_LINES: usize = 12;

#[derive(Debug, Args)]
pub(crate) struct TopArgs {}

/// What is on the screen.
#[derive(Debug, Default)]
pub(crate) struct Screen {
    agents: Vec<AgentInfo>,
    selected: usize,
    /// The selected agent's last lines of output.
    output: Vec<String>,
    /// Why the last refresh failed (the daemon is down, …); the last good view stays.
    trouble: Option<String>,
}

impl Screen {
    fn selected_agent(&self) -> Option<&AgentInfo> {
        self.agents.get(self.selected)
    }

    fn select(&mut self, step: isize) {
        let last = self.agents.len().saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(step).min(last);
        self.output.clear();
    }
}

pub(crate) async fn run(client: &Client, _args: TopArgs) -> CtlResult {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "`ctl top` draws on a terminal and reads keys from it; in scripts use `ctl ls` \
             (or `ctl ls --json`)"
                .into(),
        ));
    }
    let mut terminal = ratatui::try_init()
        .map_err(|e| Failure::Failed(format!("cannot take over the terminal: {e}")))?;
    let result = watch(client, &mut terminal).await;
    ratatui::restore();
    result
}

/// Refreshes and redraws until a quit key.
async fn watch(client: &Client, terminal: &mut ratatui::DefaultTerminal) -> CtlResult {
    let mut keys = read_keys();
    let mut screen = Screen::default();
    let mut every = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = every.tick() => refresh(client, &mut screen).await,
            key = keys.recv() => match key {
                None => return Ok(()),
                Some(key) if quits(&key) => return Ok(()),
                Some(KeyEvent { code: KeyCode::Up | KeyCode::Char('k'), .. }) => screen.select(-1),
                Some(KeyEvent { code: KeyCode::Down | KeyCode::Char('j'), .. }) => screen.select(1),
                // A resize or another key: drawn again below.
                Some(_) => {}
            },
        }
        terminal
            .draw(|frame| draw(frame, &screen))
            .map_err(|e| Failure::Failed(format!("cannot draw on the terminal: {e}")))?;
    }
}

fn quits(key: &KeyEvent) -> bool {
    matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
        || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL))
}

/// Key presses (and resizes, as a key that does nothing), read on a thread of their own: crossterm
/// reads block. The thread ends with the process.
fn read_keys() -> tokio::sync::mpsc::UnboundedReceiver<KeyEvent> {
    let (sender, keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let key = match event::read() {
                Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => key,
                Ok(Event::Resize(..)) => KeyEvent::from(KeyCode::Null),
                Ok(_) => continue,
                Err(_) => return,
            };
            if sender.send(key).is_err() {
                return;
            }
        }
    });
    keys
}

/// Reads the agents and the selected agent's last output lines.
async fn refresh(client: &Client, screen: &mut Screen) {
    match client.list_agents().await {
        Ok(agents) => {
            screen.agents = agents;
            screen.selected = screen.selected.min(screen.agents.len().saturating_sub(1));
            screen.trouble = None;
        }
        Err(e) => {
            screen.trouble = Some(e.to_string());
            return;
        }
    }
    let Some(id) = screen.selected_agent().map(|a| a.id.clone()) else {
        screen.output.clear();
        return;
    };
    let query = LogsQuery {
        tail: Some(OUTPUT_LINES),
        ..LogsQuery::default()
    };
    let mut text = Vec::new();
    if let Ok(mut body) = client.get_logs(&id, &query).await {
        while let Ok(Some(chunk)) = next_chunk(&mut body).await {
            text.extend_from_slice(&chunk);
        }
    }
    screen.output = String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_owned)
        .collect();
}

/// Draws the screen: the agents' table, the selected agent's output, a line of keys.
pub(crate) fn draw(frame: &mut Frame, screen: &Screen) {
    let [table_area, output_area, keys_area] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(OUTPUT_LINES as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let header = Row::new(["NAME", "STATE", "CPU", "MEM", "RESTARTS", "UPTIME", "PID"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = screen.agents.iter().map(|agent| {
        Row::new([
            agent.name.clone(),
            agent.state.as_str().to_owned(),
            cpu_text(agent),
            memory_text(agent),
            agent.restarts.to_string(),
            uptime_text(agent),
            agent.pid.map_or("-".into(), |pid| pid.to_string()),
        ])
    });
    let title = match &screen.trouble {
        Some(trouble) => format!(" agents ({trouble}) "),
        None => format!(" agents ({}) ", screen.agents.len()),
    };
    let table = Table::new(
        rows,
        [
            Constraint::Fill(3),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::ALL).title(title))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(screen.selected));
    frame.render_stateful_widget(table, table_area, &mut state);

    let output_title = screen
        .selected_agent()
        .map_or(" output ".into(), |a| format!(" {} output ", a.name));
    let output: Vec<Line> = screen
        .output
        .iter()
        .map(|line| Line::raw(line.as_str()))
        .collect();
    frame.render_widget(
        Paragraph::new(output).block(Block::new().borders(Borders::ALL).title(output_title)),
        output_area,
    );
    frame.render_widget(
        Paragraph::new("↑/↓ or j/k select · q quits · refreshed every second"),
        keys_area,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;

    fn agent(name: &str, state: &str, usage: serde_json::Value) -> AgentInfo {
        serde_json::from_value(serde_json::json!({
            "id": format!("ag-{name}"), "name": name, "state": state, "pid": 4242, "restarts": 3,
            "command": "run", "workspace": "/w", "env_keys": [], "auto_restart": true,
            "source": "cli", "run": 4, "created_at_ms": 1, "mode": "pty", "usage": usage,
            "settings": {
                "stop_signal": "TERM", "stop_timeout_ms": 1, "restart_max": 1,
                "restart_window_secs": 1, "backoff_initial_ms": 1, "backoff_max_ms": 1,
                "backoff_reset_secs": 1, "scrollback_kb": 1
            }
        }))
        .expect("an agent")
    }

    fn rendered(screen: &Screen) -> String {
        let mut terminal = Terminal::new(TestBackend::new(90, 24)).expect("a test terminal");
        terminal.draw(|frame| draw(frame, screen)).expect("drawn");
        let buffer = terminal.backend().buffer();
        let width = buffer.area.width as usize;
        let symbols: Vec<&str> = buffer.content().iter().map(|cell| cell.symbol()).collect();
        symbols
            .chunks(width)
            .map(|line| line.concat())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn draws_each_agent_with_its_cpu_memory_and_restarts_and_the_selected_output() {
        let mut screen = Screen {
            agents: vec![
                agent(
                    "web",
                    "running",
                    serde_json::json!({"cpu_percent": 12.5, "memory_bytes": 47_185_920}),
                ),
                agent("cron", "stopped", serde_json::Value::Null),
            ],
            selected: 0,
            output: vec!["listening on :8080".into()],
            trouble: None,
        };
        let text = rendered(&screen);
        let web = text
            .lines()
            .find(|l| l.contains("web "))
            .expect("web's row");
        assert!(web.contains("> web"), "{text}");
        assert!(web.contains("running") && web.contains("12.5%"), "{text}");
        assert!(web.contains("45.0 MiB") && web.contains(" 3 "), "{text}");
        let cron = text
            .lines()
            .find(|l| l.contains("cron"))
            .expect("cron's row");
        assert!(cron.contains("stopped") && cron.contains(" - "), "{text}");
        assert!(text.contains("web output") && text.contains("listening on :8080"));

        screen.select(1);
        screen.select(5);
        assert_eq!(screen.selected, 1);
        let text = rendered(&screen);
        assert!(
            text.contains("> cron") && text.contains("cron output"),
            "{text}"
        );
        screen.select(-9);
        assert_eq!(screen.selected, 0);
    }

    #[test]
    fn a_failed_refresh_keeps_the_view_and_says_why() {
        let screen = Screen {
            agents: vec![agent("web", "running", serde_json::Value::Null)],
            trouble: Some("cannot reach the daemon".into()),
            ..Screen::default()
        };
        let text = rendered(&screen);
        assert!(text.contains("cannot reach the daemon") && text.contains("web"));
    }
}

//! The API's contract: the OpenAPI document the daemon serves is valid by a standard validator and
//! says what the routes take, and `ctl` reaches the daemon only through the client's typed methods.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BIN, Daemon};

/// The `openapi-spec-validator` that `scripts/setup` installs next to the build
/// (`<target>/tools/openapi-venv`), else one on `PATH`.
fn validator() -> PathBuf {
    let target = Path::new(BIN)
        .ancestors()
        .nth(2)
        .expect("the binary is in <target>/<profile>/");
    let installed = target.join("tools/openapi-venv/bin/openapi-spec-validator");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("openapi-spec-validator")
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_valid_and_consistent() {
    let daemon = Daemon::start().await;
    let document = daemon.client.get_openapi().await.unwrap();
    let file = daemon.home().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let validator = validator();
    let output = Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/setup to install it",
                validator.display()
            )
        });
    assert!(
        output.status.success(),
        "the OpenAPI document is invalid:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let mut ids = HashSet::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let id = operation["operationId"].as_str();
            let id = id.unwrap_or_else(|| panic!("{method} {path} has no operation id"));
            assert!(ids.insert(id.to_owned()), "operation id {id} is used twice");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("parameter name");
                if parameter["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path} declares path parameter `{name}`, which is not in the path"
                    );
                }
            }
        }
    }
}

/// `ctl` names no route: every path is written once, in `celistra-client`'s typed methods.
#[test]
fn ctl_has_no_api_paths() {
    let ctl = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ctl");
    let mut offenders = vec![];
    for entry in std::fs::read_dir(&ctl).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.contains("\"/v1/") || line.contains("\"/v1\"") {
                offenders.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "ctl must call the typed methods of celistra-client, not name paths:\n{}",
        offenders.join("\n")
    );
}

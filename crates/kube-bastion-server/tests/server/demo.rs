//! The README's promise: start the server with no flags and the five printed commands work.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::{Server, TempDir};

#[test]
fn the_printed_commands_work() {
    // The README's run command with no flags; only the port is left to the OS so the test
    // cannot collide with a server already running on 8080.
    let server = Server::start(&[]);
    let commands: Vec<&str> = server
        .banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl ") || l.starts_with("kubectl ") || l.starts_with("for "))
        .collect();
    assert_eq!(commands.len(), 5, "banner:\n{}", server.banner);
    assert!(
        server.banner.contains("Loopback destinations are allowed"),
        "{}",
        server.banner
    );
    let dir = TempDir::new("demo-commands");
    let run = |command: &str| {
        let output = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("KUBECONFIG", dir.join("none"))
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{command}\nfailed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    // 1. pod
    let pod: serde_json::Value = serde_json::from_str(&run(commands[0])).unwrap();
    assert_eq!(pod["pod"], "echo-0");
    assert_eq!(pod["query"], "from=curl");
    // 2. service over https
    let secure: serde_json::Value = serde_json::from_str(&run(commands[1])).unwrap();
    assert_eq!(
        (secure["pod"].as_str(), secure["tls"].as_bool()),
        (Some("secure-0"), Some(true))
    );
    // 3. node
    assert_eq!(run(commands[2]), "ok");
    // 4. balancing: six answers, from more than one pod.
    let answers = run(commands[3]);
    let pods: Vec<&str> = answers.lines().collect();
    assert_eq!(pods.len(), 6, "{answers}");
    assert!(pods.iter().all(|p| p.starts_with("echo-")), "{answers}");
    assert!(
        pods.iter().collect::<BTreeSet<_>>().len() > 1,
        "no balancing: {answers}"
    );
    // 5. WebSocket
    let ws = run(commands[4]);
    assert!(ws.starts_with("HTTP/1.1 101"), "{ws}");
    assert!(ws.contains("connected to web-0"), "{ws}");
}

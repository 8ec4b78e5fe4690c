//! What `switchyard demo` writes and prints: the config of the tour (one route, blue and green
//! demo apps, fast health checks and a short switch so a newcomer sees every phase) and the
//! banner with the next commands to try. Pure text; starting the apps and the proxy is
//! main.rs's job, and the apps themselves are demo.rs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the tour's parts are.
#[derive(Debug, Clone)]
pub struct Places {
    pub port: u16,
    pub metrics_port: u16,
    pub blue: SocketAddr,
    pub green: SocketAddr,
    pub socket: PathBuf,
    pub state: PathBuf,
}

/// The tour's config file.
pub fn config_text(p: &Places) -> String {
    format!(
        r#"# written by `switchyard demo`
[listen]
http = "127.0.0.1:{port}"

[server]
threads = 2

[admin]
socket = "{socket}"
metrics = "127.0.0.1:{metrics_port}"

[state]
file = "{state}"
initial = "blue"

[health]
path = "/health/ready"
interval = "500ms"
timeout = "500ms"
rise = 2
fall = 2

[switch]
gate_timeout = "10s"
drain_timeout = "10s"
watch = "10s"
max_errors = 3

[shutdown]
timeout = "5s"

[preview]
header = "x-switchyard-color"
allow = ["127.0.0.1/32"]

[[route]]
name = "app"
path_prefix = "/"
blue = ["{blue}"]
green = ["{green}"]
"#,
        port = p.port,
        metrics_port = p.metrics_port,
        socket = p.socket.display(),
        state = p.state.display(),
        blue = p.blue,
        green = p.green,
    )
}

/// What the tour prints once everything runs; `me` is how the binary was invoked.
pub fn banner(p: &Places, config: &Path, me: &str) -> String {
    format!(
        r#"
switchyard demo is running
  front door   http://127.0.0.1:{port}/          (blue app on {blue}, green app on {green})
  status page  http://127.0.0.1:{metrics_port}/                (live, read-only)
  metrics      http://127.0.0.1:{metrics_port}/metrics
  config       {config}

Try, in another terminal:
  curl -s http://127.0.0.1:{port}/                                   # -> blue
  curl -s -H 'x-switchyard-color: green' http://127.0.0.1:{port}/    # preview green -> green
  {me} ctl --socket {socket} status
  {me} ctl --socket {socket} switch green                            # gate, swap, drain, watch
  curl -s http://127.0.0.1:{port}/                                   # -> green
  {me} ctl --socket {socket} rollback
  curl -s http://127.0.0.1:{metrics_port}/metrics | grep switchyard_
WebSocket echo: any path with an Upgrade, e.g. websocat ws://127.0.0.1:{port}/ws
Ctrl-C stops everything.
"#,
        port = p.port,
        metrics_port = p.metrics_port,
        blue = p.blue,
        green = p.green,
        config = config.display(),
        socket = p.socket.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn places() -> Places {
        Places {
            port: 8000,
            metrics_port: 9000,
            blue: "127.0.0.1:8081".parse().unwrap(),
            green: "127.0.0.1:8082".parse().unwrap(),
            socket: PathBuf::from("/tmp/sy-demo/admin.sock"),
            state: PathBuf::from("/tmp/sy-demo/state"),
        }
    }

    #[test]
    fn the_tour_config_is_valid_and_points_at_its_apps() {
        let cfg = Config::parse(Path::new("demo.toml"), &config_text(&places()))
            .expect("the demo's own config must pass check");
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.routes[0].blue, vec![places().blue]);
        assert_eq!(cfg.routes[0].green, vec![places().green]);
        assert_eq!(cfg.admin_socket, places().socket);
    }

    #[test]
    fn the_banner_names_the_socket_and_front_door() {
        let b = banner(
            &places(),
            Path::new("/tmp/sy-demo/switchyard.toml"),
            "switchyard",
        );
        assert!(b.contains("switchyard ctl --socket /tmp/sy-demo/admin.sock switch green"));
        assert!(b.contains("http://127.0.0.1:8000/"));
    }
}

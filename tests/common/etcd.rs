//! A real etcd cluster for the fleet tests: Debian's `etcd` binary, three members on free
//! loopback ports with temporary data dirs (never the system service), fast elections so
//! a killed leader is replaced within a second or so. Members can be killed, paused
//! (SIGSTOP), resumed and restarted; everything is stopped when the cluster is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Client};

pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl EtcdMember {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader and accepts writes.
    pub async fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("etcd{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("etcd{i}.data")),
                log: dir.path().join(format!("etcd{i}.log")),
                child: None,
                stopped: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(Duration::from_secs(30)).await;
        c
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.url()])
            .args(["--advertise-client-urls", &m.url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "switchyard-test"])
            // Fast elections: a killed leader is replaced in about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (scripts/install-deps.sh installs it)");
        m.child = Some(child);
        m.stopped = false;
    }

    /// Client URLs of every member, as `[fleet] etcd` wants them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url()).collect()
    }

    /// `etcd = [...]` for a config.
    pub fn toml_list(&self) -> String {
        let list: Vec<String> = self
            .endpoints()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Whether member `i` answers /health with a leader and a working quorum.
    pub async fn healthy(&self, i: usize) -> bool {
        let m = &self.members[i];
        if !m.running() || m.stopped {
            return false;
        }
        let url = format!("{}/health", m.url());
        match tokio::time::timeout(Duration::from_secs(2), try_get(&url)).await {
            Ok(Some(body)) => body.contains("\"health\":\"true\""),
            _ => false,
        }
    }

    /// Waits until every running, unpaused member reports healthy.
    pub async fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut all = true;
            for i in 0..self.members.len() {
                let m = &self.members[i];
                if m.running() && !m.stopped && !self.healthy(i).await {
                    all = false;
                }
            }
            if all {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd cluster not healthy after {limit:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the current leader (from each member's own /metrics).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if !m.running() || m.stopped {
                    continue;
                }
                let url = format!("{}/metrics", m.url());
                if let Ok(Some(text)) =
                    tokio::time::timeout(Duration::from_secs(2), try_get(&url)).await
                {
                    if text.lines().any(|l| l == "etcd_server_is_leader 1") {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL member `i` (its data dir stays, so it can be restarted).
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.stopped = false;
    }

    /// Starts a killed member again on its data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.members[i].running(), "etcd{i} still runs");
        self.spawn(i);
    }

    /// SIGSTOP: the member keeps its sockets open but answers nothing.
    pub fn pause(&mut self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
        self.members[i].stopped = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
        self.members[i].stopped = false;
    }

    /// Compacts the history up to the current revision, through a real client.
    pub async fn compact(&self) -> i64 {
        let mut c = etcd_client::Client::connect(self.endpoints(), None)
            .await
            .expect("etcd connect");
        let rev = c
            .get("compact-probe", None)
            .await
            .expect("get")
            .header()
            .map(|h| h.revision())
            .expect("header");
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        rev
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// One GET that answers `None` where the common `get` would panic: a dead member is expected.
async fn try_get(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let addr: std::net::SocketAddr = uri.authority()?.as_str().parse().ok()?;
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut c = Client::from_stream(stream, addr).await;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    c.try_request("GET", path, &[], "")
        .await
        .ok()
        .map(|r| r.body)
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if m.stopped {
                m.signal(libc::SIGCONT);
            }
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

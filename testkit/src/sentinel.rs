//! A Redis master with replicas watched by Redis Sentinels, for failover tests.

use crate::certs::TestCertificates;
use crate::process::{find_program, start_on_free_port, Launch, PortIn, ServerProcess};
use crate::redis::{
    info_field, redis_answers_ping, redis_command_as, redis_quote, tls_config, wait_until,
    RedisServer,
};
use crate::tempdir::TempDir;
use crate::{free_loopback_port, TestkitError, QUICK_START_TIMEOUT};
use std::fs;
use std::io;
use std::time::Duration;

/// The master name the sentinels of a [`RedisSentinelSet`] watch.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";
/// How long a master may stay silent before a sentinel calls it down, in the test set.
pub const SENTINEL_DOWN_AFTER: Duration = Duration::from_millis(500);
/// How long the sets wait for the sentinels to find each other and the replicas.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Who needs which password in a [`RedisSentinelSet`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SentinelAuth {
    /// `requirepass` of the master and replicas (and their `masterauth`).
    pub password: Option<String>,
    /// `requirepass` of the sentinels themselves.
    pub sentinel_password: Option<String>,
}

impl SentinelAuth {
    /// Passwords for the data servers and for the sentinels.
    pub fn new(password: Option<&str>, sentinel_password: Option<&str>) -> Self {
        SentinelAuth {
            password: password.map(str::to_owned),
            sentinel_password: sentinel_password.map(str::to_owned),
        }
    }
}

/// One `redis-sentinel` process (or `redis-server --sentinel` where the `redis-sentinel`
/// program is not installed) on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct SentinelServer {
    // Declared before `dir` so the process is killed before the directory is removed.
    process: ServerProcess,
    port: u16,
    tls_port: Option<u16>,
    dir: TempDir,
}

impl SentinelServer {
    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port on `127.0.0.1`, for a sentinel of [`RedisSentinelSet::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The sentinel's temporary directory (its `sentinel.conf`, which it rewrites).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the sentinel with `SIGKILL`, as a crash would.
    ///
    /// # Errors
    /// [`TestkitError::Io`] if the signal cannot be sent or the process not waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        self.process.kill()
    }
}

/// A Redis master with replicas and three sentinels (quorum 2) watching it as
/// [`SENTINEL_MASTER_NAME`], each process on its own free port of `127.0.0.1`, stopped
/// when dropped.
///
/// The sentinels call a silent master down after [`SENTINEL_DOWN_AFTER`] and give a
/// failover 2 s, so a killed master is replaced within a few seconds. `start` returns once
/// every sentinel knows the replicas and the other sentinels, so a failover can happen.
/// `Send` and `Sync`.
///
/// ```no_run
/// let set = polycache_testkit::RedisSentinelSet::start()?;
/// assert!(set.url().starts_with("redis+sentinel://127.0.0.1:"));
/// # Ok::<(), polycache_testkit::TestkitError>(())
/// ```
#[derive(Debug)]
pub struct RedisSentinelSet {
    servers: Vec<RedisServer>,
    sentinels: Vec<SentinelServer>,
    auth: SentinelAuth,
    /// The CA file when everything speaks TLS ([`RedisSentinelSet::start_tls`]).
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisSentinelSet {
    /// A master, one replica and three sentinels, without passwords.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`TestkitError::StartFailed`] when replication or the
    /// sentinels' discovery does not complete within 30 s.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(1, &SentinelAuth::default())
    }

    /// A master, `replicas` replicas and three sentinels, with the passwords of `auth`.
    ///
    /// # Errors
    /// As [`RedisSentinelSet::start`].
    pub fn start_with(replicas: usize, auth: &SentinelAuth) -> Result<Self, TestkitError> {
        Self::start_inner(replicas, auth, None)
    }

    /// A master, one replica and three sentinels, all speaking TLS with the server
    /// certificate of `certs` (replication and the sentinels' own links too); the plain
    /// ports stay open for the readiness probes and [`RedisSentinelSet::data_command`].
    ///
    /// # Errors
    /// As [`RedisSentinelSet::start`]; [`TestkitError::StartFailed`] also when this
    /// `redis-server` was built without TLS.
    pub fn start_tls(certs: &TestCertificates) -> Result<Self, TestkitError> {
        Self::start_inner(1, &SentinelAuth::default(), Some(certs))
    }

    fn start_inner(
        replicas: usize,
        auth: &SentinelAuth,
        certs: Option<&TestCertificates>,
    ) -> Result<Self, TestkitError> {
        // A replica link that overflows its output buffer under a fault test's load is cut and
        // resynchronised in full; a master killed during that resync leaves the promoted
        // replica empty. No buffer limit and a large backlog keep the link (and the data).
        let mut data_conf: Vec<String> = vec![
            "client-output-buffer-limit replica 0 0 0".into(),
            "repl-backlog-size 64mb".into(),
        ];
        if let Some(pw) = &auth.password {
            data_conf.push(format!("requirepass {}", quote(pw)));
            data_conf.push(format!("masterauth {}", quote(pw)));
        }
        if certs.is_some() {
            data_conf.push("tls-replication yes".into());
        }
        let start = |lines: &[String]| {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            match certs {
                Some(certs) => RedisServer::start_tls_with_config(&lines, certs),
                None => RedisServer::start_with_config(&lines),
            }
        };
        let master = start(&data_conf)?;
        let master_port = master.tls_port().unwrap_or(master.port());
        let mut servers = vec![master];
        for _ in 0..replicas {
            let mut lines = data_conf.clone();
            lines.push(format!("replicaof 127.0.0.1 {master_port}"));
            servers.push(start(&lines)?);
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(master_port, auth, certs)?);
        }
        let set = RedisSentinelSet {
            servers,
            sentinels,
            auth: auth.clone(),
            tls_ca: certs.map(TestCertificates::ca_cert),
        };
        set.wait_discovered()?;
        Ok(set)
    }

    /// The port the sentinels know `server` by: its TLS port in a TLS set.
    fn known_port(&self, server: &RedisServer) -> u16 {
        match self.tls_ca {
            Some(_) => server.tls_port().unwrap_or(server.port()),
            None => server.port(),
        }
    }

    /// Waits until every live sentinel agrees on a master that has all the other data
    /// servers as replicas with their links up, and knows the other live sentinels; then
    /// until the replicas have caught up ([`RedisSentinelSet::wait_replicas_caught_up`]).
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] when that does not happen within 30 s.
    pub fn wait_discovered(&self) -> Result<(), TestkitError> {
        let replicas = (self.servers.len() - 1).to_string();
        wait_until(
            DISCOVERY_TIMEOUT,
            "the sentinels did not discover the replicas and each other",
            || {
                let live: Vec<&SentinelServer> = self
                    .sentinels
                    .iter()
                    .filter(|s| s.process.pid().is_some())
                    .collect();
                let others = (live.len() - 1).to_string();
                live.iter().all(|s| {
                    self.sentinel_command(s.port, &["SENTINEL", "MASTER", SENTINEL_MASTER_NAME])
                        .is_ok_and(|reply| {
                            let fields = pairs(&reply);
                            let get = |k: &str| {
                                fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
                            };
                            get("num-slaves") == Some(replicas.as_str())
                                && get("num-other-sentinels") == Some(others.as_str())
                                && get("flags") == Some("master")
                        })
                }) && self.master_port().is_ok_and(|port| {
                    self.servers
                        .iter()
                        .filter(|s| self.known_port(s) != port)
                        .all(|s| {
                            self.data_command(s.port(), &["INFO", "replication"])
                                .ok()
                                .and_then(|info| info_field(&info, "master_link_status"))
                                .as_deref()
                                == Some("up")
                        })
                })
            },
        )?;
        self.wait_replicas_caught_up(DISCOVERY_TIMEOUT)
    }

    /// `redis+sentinel://[:pw@]127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster/0`, with
    /// `?sentinel_password=…` when the sentinels have one; in a TLS set
    /// `rediss+sentinel://…` with the sentinels' TLS ports and `?tls_ca=…`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect();
        let auth = match &self.auth.password {
            Some(pw) => format!(":{pw}@"),
            None => String::new(),
        };
        let scheme = match self.tls_ca {
            Some(_) => "rediss+sentinel",
            None => "redis+sentinel",
        };
        let mut url = format!(
            "{scheme}://{auth}{}/{SENTINEL_MASTER_NAME}/0",
            hosts.join(",")
        );
        let mut options = Vec::new();
        if let Some(pw) = &self.auth.sentinel_password {
            options.push(format!("sentinel_password={pw}"));
        }
        if let Some(ca) = &self.tls_ca {
            options.push(format!("tls_ca={}", ca.display()));
        }
        if !options.is_empty() {
            url.push('?');
            url.push_str(&options.join("&"));
        }
        url
    }

    /// The data servers: the first started as the master, the others as its replicas.
    /// After a failover the master is another one: see [`RedisSentinelSet::master_port`].
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The data servers, to kill or freeze one.
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[SentinelServer] {
        &self.sentinels
    }

    /// The sentinels, to kill one.
    pub fn sentinels_mut(&mut self) -> &mut [SentinelServer] {
        &mut self.sentinels
    }

    /// The port of the master, as the first live sentinel that answers names it.
    ///
    /// # Errors
    /// [`TestkitError::Io`] when no sentinel answers with an address.
    pub fn master_port(&self) -> Result<u16, TestkitError> {
        let mut last = None;
        for s in self.sentinels.iter().filter(|s| s.process.pid().is_some()) {
            let args = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME];
            match self.sentinel_command(s.port, &args) {
                Ok(reply) => {
                    if let Some(port) = reply.lines().nth(1).and_then(|p| p.parse().ok()) {
                        return Ok(port);
                    }
                    last = Some(bad_reply(&reply));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| bad_reply("no sentinel is running")))
    }

    /// The plain port of a data server that is not the master (a replica, unless a
    /// failover is under way).
    ///
    /// # Errors
    /// As [`RedisSentinelSet::master_port`]; also when every server is the master.
    pub fn replica_port(&self) -> Result<u16, TestkitError> {
        let master = self.master_port()?;
        self.servers
            .iter()
            .find(|s| self.known_port(s) != master)
            .map(RedisServer::port)
            .ok_or_else(|| bad_reply("no server besides the master"))
    }

    /// The index in [`RedisSentinelSet::servers`] of the current master.
    ///
    /// # Errors
    /// As [`RedisSentinelSet::master_port`]; also when the port is none of the servers'.
    pub fn master_index(&self) -> Result<usize, TestkitError> {
        let port = self.master_port()?;
        self.servers
            .iter()
            .position(|s| self.known_port(s) == port)
            .ok_or_else(|| bad_reply(&format!("the sentinels name unknown port {port}")))
    }

    /// Waits until the sentinels name a master other than `old_port` and that server
    /// answers as a master; returns its port.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] when no failover completes within `within`.
    pub fn wait_failover(&self, old_port: u16, within: Duration) -> Result<u16, TestkitError> {
        let mut new_port = None;
        wait_until(within, "the sentinels did not fail over", || {
            let Ok(port) = self.master_port() else {
                return false;
            };
            let plain = self
                .servers
                .iter()
                .find(|s| self.known_port(s) == port)
                .map_or(port, RedisServer::port);
            let promoted = port != old_port
                && self
                    .data_command(plain, &["ROLE"])
                    .is_ok_and(|role| role.starts_with("master"));
            if promoted {
                new_port = Some(port);
            }
            promoted
        })?;
        new_port.ok_or_else(|| bad_reply("no master after the failover"))
    }

    /// Waits until the master has every live replica's acknowledgement of its replication
    /// stream up to where it stood when this was called: what the master had accepted by
    /// then is on every replica, so a failover cannot lose it.
    ///
    /// A replica reports `master_link_status:up` once it has loaded the master's snapshot,
    /// but the master streams the writes made since the snapshot only once the replica has
    /// acknowledged it (up to a second later); a master killed in between leaves a promoted
    /// replica without them. So this reads the offsets the master has seen acknowledged
    /// (`INFO replication`'s `slaveN:…,offset=…` lines), not the replicas' own. Tests that
    /// kill the master call this first.
    ///
    /// # Errors
    /// [`TestkitError::StartFailed`] when the replicas do not catch up within `within`.
    pub fn wait_replicas_caught_up(&self, within: Duration) -> Result<(), TestkitError> {
        let master = self.master_port()?;
        let master = self
            .servers
            .iter()
            .find(|s| self.known_port(s) == master)
            .map_or(master, RedisServer::port);
        let live_replicas = self
            .servers
            .iter()
            .filter(|s| s.port() != master && s.pid().is_some())
            .count();
        let info = || self.data_command(master, &["INFO", "replication"]).ok();
        let target = info()
            .and_then(|info| info_field(&info, "master_repl_offset"))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad_reply("the master reports no replication offset"))?;
        wait_until(
            within,
            "the replicas did not catch up with the master",
            || info().is_some_and(|info| acknowledged_offsets(&info, live_replicas, target)),
        )
    }

    /// Sends one command to the data server on `port`, authenticating first when the set
    /// has a password; the reply as [`crate::redis_command`] gives it.
    ///
    /// # Errors
    /// As [`crate::redis_command`].
    pub fn data_command(&self, port: u16, args: &[&str]) -> Result<String, TestkitError> {
        redis_command_as(port, self.auth.password.as_deref(), args)
    }

    /// Sends one command to the sentinel on `port`, authenticating first when the sentinels
    /// have a password.
    ///
    /// # Errors
    /// As [`crate::redis_command`].
    pub fn sentinel_command(&self, port: u16, args: &[&str]) -> Result<String, TestkitError> {
        redis_command_as(port, self.auth.sentinel_password.as_deref(), args)
    }
}

/// Whether `INFO replication` of a master lists at least `replicas` replicas online that
/// have acknowledged offset `target` or later.
fn acknowledged_offsets(info: &str, replicas: usize, target: u64) -> bool {
    let caught_up = info
        .lines()
        .filter(|line| line.starts_with("slave") && line.contains(":ip="))
        .filter(|line| {
            let fields: Vec<(&str, &str)> = line
                .split_once(':')
                .map_or("", |(_, v)| v)
                .split(',')
                .filter_map(|f| f.split_once('='))
                .collect();
            let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            field("state") == Some("online")
                && field("offset")
                    .and_then(|o| o.trim().parse::<u64>().ok())
                    .is_some_and(|o| o >= target)
        })
        .count();
    caught_up >= replicas
}

fn start_sentinel(
    master_port: u16,
    auth: &SentinelAuth,
    certs: Option<&TestCertificates>,
) -> Result<SentinelServer, TestkitError> {
    // Debian's `redis-sentinel` package; without it, `redis-server <conf> --sentinel` is the
    // same program in sentinel mode.
    let (program, sentinel_flag) = match find_program("redis-sentinel", "redis-sentinel") {
        Ok(p) => (p, false),
        Err(_) => (find_program("redis-server", "redis-server")?, true),
    };
    let dir = TempDir::create("sentinel", None)?;
    let conf_path = dir.path().join("sentinel.conf");
    let log_path = dir.path().join("sentinel.log");
    let mut args = vec![conf_path.clone().into_os_string()];
    if sentinel_flag {
        args.push("--sentinel".into());
    }
    let launch = Launch::new(program, args, dir.path());
    let mut process = ServerProcess::new("redis-sentinel", launch, log_path, libc::SIGTERM);
    let dir_path = dir.path().to_path_buf();
    let mut tls_port = None;
    let port = start_on_free_port(
        &mut process,
        QUICK_START_TIMEOUT,
        PortIn::ConfigFile,
        |port| {
            let mut conf = sentinel_config(port, &dir_path, master_port, auth);
            if let Some(certs) = certs {
                let tls = free_loopback_port()?;
                tls_port = Some(tls);
                for line in tls_config(tls, certs) {
                    conf.push_str(&line);
                    conf.push('\n');
                }
                conf.push_str("tls-replication yes\n");
            }
            fs::write(&conf_path, conf)
                .map_err(|e| TestkitError::io(format!("writing {}", conf_path.display()), e))?;
            Ok(Box::new(move || redis_answers_ping(port)))
        },
    )?;
    Ok(SentinelServer {
        process,
        port,
        tls_port,
        dir,
    })
}

fn sentinel_config(
    port: u16,
    dir: &std::path::Path,
    master_port: u16,
    auth: &SentinelAuth,
) -> String {
    let name = SENTINEL_MASTER_NAME;
    let mut conf = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode no\n\
         daemonize no\n\
         dir {}\n\
         logfile \"\"\n\
         sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {name} {}\n\
         sentinel failover-timeout {name} 2000\n\
         sentinel parallel-syncs {name} 1\n",
        redis_quote(dir),
        SENTINEL_DOWN_AFTER.as_millis(),
    );
    if let Some(pw) = &auth.password {
        conf.push_str(&format!("sentinel auth-pass {name} {}\n", quote(pw)));
    }
    if let Some(pw) = &auth.sentinel_password {
        conf.push_str(&format!("requirepass {}\n", quote(pw)));
        conf.push_str(&format!("sentinel sentinel-pass {}\n", quote(pw)));
    }
    conf
}

/// A password as one `redis.conf` argument.
fn quote(text: &str) -> String {
    redis_quote(std::path::Path::new(text))
}

/// `name\nvalue\nname\nvalue…` (a flat array reply) as pairs.
fn pairs(reply: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .chunks(2)
        .filter_map(|c| match c {
            [k, v] => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

fn bad_reply(what: &str) -> TestkitError {
    TestkitError::io(
        "asking the sentinels for the master",
        io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_config_names_the_master_and_passwords() {
        let auth = SentinelAuth::new(Some("pw"), Some("spw"));
        let conf = sentinel_config(26379, std::path::Path::new("/d"), 6379, &auth);
        assert!(
            conf.contains("sentinel monitor mymaster 127.0.0.1 6379 2\n"),
            "{conf}"
        );
        assert!(
            conf.contains("sentinel auth-pass mymaster \"pw\"\n"),
            "{conf}"
        );
        assert!(conf.contains("requirepass \"spw\"\n"), "{conf}");
        assert_eq!(
            pairs("a\n1\nb\n2"),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn replicas_count_as_caught_up_once_online_with_the_offset_acknowledged() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=500,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
            master_repl_offset:500\r\n";
        assert!(acknowledged_offsets(info, 1, 500));
        assert!(
            !acknowledged_offsets(info, 1, 501),
            "offset not acknowledged yet"
        );
        assert!(
            !acknowledged_offsets(info, 2, 0),
            "a replica is still syncing"
        );
    }
}

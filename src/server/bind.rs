//! Starting a server: [`Server::bind`] binds the listeners (or takes them from socket activation
//! or, in a hot upgrade, from the old process), seeds the user store, opens the delivery store,
//! starts the auth workers and the handler processes, and builds the loop's state. Nothing is
//! served until [`Server::run`].

use super::*;

impl Server {
    /// Bind the listener and the handler sockets, seed the user store, start the auth workers and
    /// the handler processes. Nothing is served until [`Server::run`].
    pub fn bind(config: Config) -> io::Result<Server> {
        Server::bind_with(config, None)
    }

    /// [`Server::bind`] as the new process of a hot upgrade: on the sockets `inherited` from the
    /// old process, accepting nothing and telling the service manager nothing until the old
    /// process hands over (`upgrade.rs`).
    pub fn bind_with(
        mut config: Config,
        inherited: Option<handover::Inherited>,
    ) -> io::Result<Server> {
        listeners::fit_fd_limit(&mut config);
        let poll = Poll::new()?;
        let mut inherited = inherited;
        let upgrading = inherited.is_some();
        let mut activation = activation::Activation::from_env()?;
        let activated = activation.is_active();
        let mut listeners = Listeners::bind_with(&config, poll.registry(), |name| {
            if let Some(inherited) = inherited.as_mut() {
                let name = if name == "main" {
                    activation::CLIENT
                } else {
                    name
                };
                return inherited.take_tcp(handover::FdRole::Listener, name);
            }
            let taken = if name == "main" {
                activation.take_client()?
            } else {
                activation.take_tcp(name)?
            };
            Ok(taken.map(mio::net::TcpListener::from_std))
        })?;
        activation.close_rest();
        // Sockets made here (not passed in) are kept by the service manager across a restart.
        // (An upgrade's sockets are the old process's, in the store already.)
        if !activated && !upgrading && std::env::var_os("NOTIFY_SOCKET").is_some() {
            listeners.store_in_fd_store();
        }
        if upgrading {
            listeners.pause(poll.registry());
        }
        let local_addr = listeners.main_addr();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGUSR1, SIGUSR2])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        if let Some(boot) = &config.bootstrap_user {
            match crate::auth::user_store::bootstrap(
                &config.users,
                &boot.username,
                &boot.password_hash,
            ) {
                Ok(true) => info!(
                    "created user store {} with bootstrap user {:?}",
                    config.users.display(),
                    boot.username
                ),
                Ok(false) => {}
                Err(e) => return Err(io::Error::other(format!("user store: {e}"))),
            }
        }
        warn_if_nobody_can_log_in(&config.users);
        let auth = AuthPool::start(
            config.users.clone(),
            config.auth_threads,
            config.auth_queue,
            Arc::clone(&waker),
        )?;
        // Without `[auth] token_secret_file` the pool's random key of this run stays.
        if let Some(key) = &config.auth.token_key {
            auth.set_token_key(key.clone());
        } else if let Some(key) = inherited.as_mut().and_then(|i| i.token_key.take()) {
            // A hot upgrade: the resume tokens the old process issued stay valid.
            auth.set_token_key(key);
        }

        let adopted = inherited.as_ref().and_then(|i| i.runtime_dir.clone());
        let runtime = match &adopted {
            Some(dir) => RuntimeDir::adopt(dir),
            None => RuntimeDir::create(config.runtime_dir.as_deref()),
        };
        let mut runtime = runtime.map_err(|e| {
            if crate::fsutil::refusal(&e).is_some() {
                // Names the path and the reason already; `serve` exits as for a config error.
                return e;
            }
            let dir = config.runtime_dir.as_deref().map_or_else(
                || "$RUNTIME_DIRECTORY or a temporary directory".to_string(),
                |d| d.display().to_string(),
            );
            io::Error::new(e.kind(), format!("runtime directory {dir}: {e}"))
        })?;
        let now = Instant::now();
        let mut router = Router::new(RouterConfig {
            server: config.name.clone(),
            request_timeout: config.request_timeout,
            max_chain_depth: config.max_chain_depth,
            max_frame: config.max_frame,
            login_timeout: config.auth.login_timeout,
            max_logins: config.auth.max_logins,
        });
        let delivery = delivery::open(&config, Arc::clone(&waker))?;
        if let Some(d) = &delivery {
            let types = config
                .handlers
                .iter()
                .filter(|(_, h)| h.store_offline)
                .map(|(kind, _)| kind.clone());
            router.set_delivery(d.first_id(), types);
        }
        router.set_presence(config.presence.clone());
        router.set_streams(config.streams.clone());
        router.set_group_limits(config.groups.clone());
        router.set_directory(config.federation.clone());
        let supervisor = Supervisor::new(&config.name);
        let mut peers = BTreeMap::new();
        for (name, peer) in &config.peers {
            peers.insert(
                name.clone(),
                PeerSlot {
                    tls: peers::tls_for(name, peer)?,
                    config: peer.clone(),
                    dialing: None,
                    plain_handshake: false,
                    failures: 0,
                    retry_at: now,
                    since: now,
                },
            );
        }
        let logins =
            LoginLimiter::new(config.login_failures_per_ip, config.login_failures_per_user);
        if upgrading {
            // Never the old process's handler sockets.
            runtime.tag_sockets(std::process::id());
        }
        let inherited_monitor = match inherited.as_mut() {
            Some(i) => i.take_tcp(handover::FdRole::Monitor, "monitor")?,
            None => None,
        };
        let mut monitor = monitor::Monitor::bind(&config, poll.registry(), inherited_monitor)?;
        if upgrading && let Some(monitor) = &mut monitor {
            monitor.pause(poll.registry());
        }
        let admin = admin::Admin::bind(&runtime, poll.registry(), !upgrading)?;
        let config_max_connections = config.max_connections;
        let tokens = token_login::Tokens::open(&config)?;
        let mut server = Server {
            life: Lifecycle::new(now, config.handler_startup_timeout),
            reloads: Reloads::new(waker),
            sessions: Sessions::new(now),
            tokens,
            attached: Default::default(),
            config,
            poll,
            listeners,
            signals,
            conns: Slab::new(),
            generation: 0,
            router,
            auth,
            logins,
            per_ip: HashMap::new(),
            peers,
            supervisor,
            handler_listeners: Slab::new(),
            dialer: Dialer::new(),
            timers: BinaryHeap::new(),
            redials: dial::Redials::default(),
            actions: Vec::new(),
            to_close: Vec::new(),
            redirects: std::collections::VecDeque::new(),
            redirects_waiting: Vec::new(),
            dirty: Vec::new(),
            more_input: Vec::new(),
            accept_again: false,
            accept: AcceptGuard::new(),
            scratch: vec![0u8; SCRATCH_SIZE].into_boxed_slice(),
            frame: Vec::new(),
            stats: ServerStats::default(),
            started: now,
            monitor,
            admin,
            delivery,
            linger: Linger::new(LINGER_BASE, (config_max_connections / 4).clamp(16, 4096)),
            noise: noise::Noise::new(now),
            upgrades: upgrade::Upgrades::default(),
            runtime,
        };
        if let Some(i) = &inherited {
            server.life.inherit(i.watchdog);
        }
        server.upgrades.inherited = inherited;
        for (kind, handler) in server.config.handlers.clone() {
            server.add_handler(&kind, &handler, now)?;
        }
        server.upgrades.adopt_parent(server.poll.registry())?;
        for (name, peer) in &server.config.peers {
            server.router.add_peer(name);
            server.router.set_peer_types(name, peer.allow_types.clone());
        }
        server.supervisor.tick(now);
        server.update_starting();
        info!(
            "server={} listening on {local_addr}{}; handler sockets in {}",
            server.config.name,
            if activated {
                " (socket activation)"
            } else {
                ""
            },
            server.runtime.path().display()
        );
        Ok(server)
    }
}

/// Say loudly, at start, when the user store is missing or holds nobody: the daemon serves, but
/// no one can log in by password until `besterd user add` (the store is read again on change).
fn warn_if_nobody_can_log_in(path: &std::path::Path) {
    let what = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist",
        Err(_) => return,
        Ok(_) => match crate::auth::user_store::UserStore::open(path) {
            Ok(store) if store.users().is_empty() => "holds no users",
            _ => return,
        },
    };
    warn!(
        "the user store {} {what}: nobody can log in with a password until one is added \
         (besterd user --users {} add NAME; it is read again when it changes)",
        path.display(),
        path.display()
    );
}

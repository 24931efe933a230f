//! Loopback ports for servers the tests start as child processes (serve, PostgreSQL).
//!
//! A port from `bind("127.0.0.1:0")` comes from the kernel's ephemeral range, the same range
//! every outgoing connection's local port comes from: between the pick and the child's own
//! bind, any connection of a test running in parallel may take it, and the child then fails
//! with "address in use". So ports are picked at random below that range, where only another
//! pick can collide, and checked bindable.

/// A loopback port that is free now and outside the ephemeral range.
pub fn free_port() -> u16 {
    let below = ephemeral_start().unwrap_or(32768);
    let low: u16 = 10_000;
    let high = below.max(low + 1);
    loop {
        let port = rand::Rng::random_range(&mut rand::rng(), low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `127.0.0.1:PORT` with a [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The first port of the kernel's ephemeral range (Linux), if it can be read.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn picked_ports_are_below_the_ephemeral_range_and_bindable() {
        let start = super::ephemeral_start().unwrap_or(32768);
        for _ in 0..50 {
            let port = super::free_port();
            assert!((10_000..start.max(10_001)).contains(&port), "{port}");
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }
}

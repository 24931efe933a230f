//! The HTTP client: the only code in timctl that talks to the network.

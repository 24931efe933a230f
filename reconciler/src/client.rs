//! The one way the binary builds the API client, for apply's deletions, the listing phase's
//! get_list and serve: the app, the credentials, the endpoint's rate, the retries and the
//! run's stop, which the client obeys whoever raises it (a signal, a fatal answer, a state
//! write failing, too many failures).

use timctl_core::api::Endpoint;
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials};
use timctl_core::desired::App;
use timctl_core::stop::Stop;

/// How the client calls.
pub(crate) struct Calls<'a> {
    /// The region's host, or `--endpoint`.
    pub(crate) base_url: BaseUrl,
    /// Calls per second of the one endpoint the command calls.
    pub(crate) rate: f64,
    /// Retries of a transient failure per call.
    pub(crate) max_retries: u32,
    /// The run's stop.
    pub(crate) stop: &'a Stop,
}

/// The client of `app`, calling endpoint `E` at `calls.rate`.
pub(crate) fn build<E: Endpoint>(
    app: &App,
    credentials: Credentials,
    calls: Calls<'_>,
) -> miette::Result<Client> {
    let mut config = config(
        app,
        credentials,
        calls.base_url,
        calls.max_retries,
        calls.stop,
    );
    config.set_rate::<E>(calls.rate);
    Ok(Client::new(config)?)
}

/// What every client of `app` shares, for a caller that sets more (serve calls both endpoints,
/// each at its own rate, and counts every attempt).
pub(crate) fn config(
    app: &App,
    credentials: Credentials,
    base_url: BaseUrl,
    max_retries: u32,
    stop: &Stop,
) -> ClientConfig {
    let mut config = ClientConfig::new(base_url, app.sdkappid, app.admin.as_str(), credentials);
    config.max_retries = max_retries;
    config.stop = stop.clone();
    config
}

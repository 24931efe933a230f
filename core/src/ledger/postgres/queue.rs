//! serve's queue between replicas, in the state's database (`timctl.queue`, schema 5).
//!
//! A standby replica answers a callback only once the conversations it concerns are committed
//! here ([`QueueSession::push`]), so that a callback any replica answered is enforced even if
//! that replica dies right after. Each push notifies [`CHANNEL`]; the active replica listens on
//! it and takes the rows at once ([`QueueSession::take`]): they are deleted from the table in the
//! same transaction as they are handed to its enforcer, which commits only once they are. A row
//! so taken whose deletion the active replica then never makes (it died) is caught by the next
//! active replica's takeover resync, which reads every manifest user's list.
//!
//! The queue is bounded: a push past `capacity` rows takes only what fits and says so.
//! Sessions here are of their own, never the writer's: a standby holds no lock, and the active
//! replica's writes are not held up by its listening.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::{PgError, PgLocation, connect, kind_code, kind_of_code, query_err, sdkappid_sql};
use crate::ids::{ConversationKey, Peer, UserId};

/// The channel a push notifies and the active replica listens on.
pub const CHANNEL: &str = "timctl_queue";

/// One queued conversation, as a standby's callback queued it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueItem {
    /// Which conversation.
    pub key: ConversationKey,
    /// Whether the manifests (the standby's) ask to clear its roaming messages.
    pub clear_roaming: bool,
    /// When the callback arrived, in Unix milliseconds (for the enforcement latency).
    pub arrived_ms: i64,
    /// The history's `trigger` of the callback, a JSON object.
    pub trigger: Option<serde_json::Value>,
}

/// A session on the queue of one state (its SDKAppID and name).
pub struct QueueSession {
    client: postgres::Client,
    location: PgLocation,
    app: i64,
    name: String,
    listening: bool,
}

impl std::fmt::Debug for QueueSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSession")
            .field("state", &self.location.to_string())
            .field("name", &self.name)
            .finish()
    }
}

impl QueueSession {
    /// Opens a session on the queue of the state `name` of `sdkappid`. Must not be called on a
    /// thread that drives async tasks (the driver runs a runtime of its own).
    pub fn connect(location: &PgLocation, name: &str, sdkappid: u64) -> Result<Self, PgError> {
        let app = sdkappid_sql(sdkappid)?;
        Ok(Self {
            client: connect(location)?,
            location: location.clone(),
            app,
            name: name.to_owned(),
            listening: false,
        })
    }

    /// Commits `items` to the queue, at most as many as keep it within `capacity` rows, and
    /// notifies [`CHANNEL`]; returns how many (from the front of `items`) were queued.
    pub fn push(&mut self, items: &[QueueItem], capacity: usize) -> Result<usize, PgError> {
        let doing = "queueing conversations for the active replica";
        let location = self.location.clone();
        let mut tx = self
            .client
            .transaction()
            .map_err(query_err(&location, doing))?;
        let queued: i64 = tx
            .query_one(
                "SELECT count(*) FROM timctl.queue WHERE sdkappid = $1 AND name = $2",
                &[&self.app, &self.name],
            )
            .map_err(query_err(&location, doing))?
            .get(0);
        let room = capacity.saturating_sub(usize::try_from(queued).unwrap_or(usize::MAX));
        let taken = &items[..items.len().min(room)];
        if taken.is_empty() {
            return Ok(0);
        }
        let from: Vec<&str> = taken.iter().map(|i| i.key.from.as_str()).collect();
        let kind: Vec<i16> = taken.iter().map(|i| kind_code(i.key.peer.kind())).collect();
        let peer: Vec<&str> = taken.iter().map(|i| i.key.peer.id()).collect();
        let clear: Vec<bool> = taken.iter().map(|i| i.clear_roaming).collect();
        let arrived: Vec<i64> = taken.iter().map(|i| i.arrived_ms).collect();
        let trigger: Vec<Option<String>> = taken
            .iter()
            .map(|i| i.trigger.as_ref().map(serde_json::Value::to_string))
            .collect();
        tx.execute(
            "INSERT INTO timctl.queue
               (sdkappid, name, from_account, kind, peer, clear_roaming, arrived_at, trigger_json)
             SELECT $1, $2, f, k, p, c, a, t::jsonb
             FROM unnest($3::text[], $4::smallint[], $5::text[], $6::boolean[], $7::bigint[],
                         $8::text[]) WITH ORDINALITY AS i(f, k, p, c, a, t, n)
             ORDER BY n",
            &[
                &self.app, &self.name, &from, &kind, &peer, &clear, &arrived, &trigger,
            ],
        )
        .map_err(query_err(&location, doing))?;
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .map_err(query_err(&location, doing))?;
        tx.commit().map_err(query_err(&location, doing))?;
        Ok(taken.len())
    }

    /// Takes up to `limit` of the oldest rows: they are deleted in one transaction, which
    /// commits only after `hand` has been given them (a failure before the commit leaves
    /// them queued). Returns how many were taken.
    pub fn take(
        &mut self,
        limit: i64,
        hand: impl FnOnce(Vec<QueueItem>),
    ) -> Result<usize, PgError> {
        let doing = "taking conversations from the queue";
        let location = self.location.clone();
        let mut tx = self
            .client
            .transaction()
            .map_err(query_err(&location, doing))?;
        let rows = tx
            .query(
                "DELETE FROM timctl.queue WHERE id IN (
                    SELECT id FROM timctl.queue WHERE sdkappid = $1 AND name = $2
                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, from_account, kind, peer, clear_roaming, arrived_at,
                           trigger_json::text",
                &[&self.app, &self.name, &limit],
            )
            .map_err(query_err(&location, doing))?;
        // DELETE … RETURNING gives no order: sorted by id, the order they were queued in.
        let mut ordered: Vec<(i64, QueueItem)> = Vec::with_capacity(rows.len());
        for r in &rows {
            // A row that does not read as a conversation (written by hand, say) is dropped
            // with a warning rather than kept forever at the head of the queue.
            let from = UserId::new(r.get::<_, &str>(1)).ok();
            let kind = kind_of_code(i64::from(r.get::<_, i16>(2)));
            let peer = kind.and_then(|k| Peer::from_parts(k, r.get::<_, &str>(3)).ok());
            let (Some(from), Some(peer)) = (from, peer) else {
                tracing::warn!(
                    row = r.get::<_, i64>(0),
                    "a queued row is not a conversation"
                );
                continue;
            };
            let trigger: Option<String> = r.get(6);
            ordered.push((
                r.get(0),
                QueueItem {
                    key: ConversationKey::new(from, peer),
                    clear_roaming: r.get(4),
                    arrived_ms: r.get(5),
                    trigger: trigger.and_then(|t| serde_json::from_str(&t).ok()),
                },
            ));
        }
        ordered.sort_by_key(|(id, _)| *id);
        let n = rows.len();
        hand(ordered.into_iter().map(|(_, i)| i).collect());
        tx.commit().map_err(query_err(&location, doing))?;
        Ok(n)
    }

    /// Waits up to `timeout` for a push's notification (listening first, on the first call);
    /// true when one came.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, PgError> {
        let doing = "listening for queued conversations";
        if !self.listening {
            self.client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(query_err(&self.location, doing))?;
            self.listening = true;
        }
        let mut notifications = self.client.notifications();
        let came = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(query_err(&self.location, doing))?
            .is_some();
        // Several pushes wake one take: drain what else is already here.
        while notifications
            .iter()
            .next()
            .map_err(query_err(&self.location, doing))?
            .is_some()
        {}
        Ok(came)
    }

    /// How many rows the state's queue holds.
    pub fn depth(&mut self) -> Result<u64, PgError> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM timctl.queue WHERE sdkappid = $1 AND name = $2",
                &[&self.app, &self.name],
            )
            .map_err(query_err(&self.location, "counting the queue"))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

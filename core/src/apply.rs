//! Carries a plan out: concurrent deletions through the client, recorded in the ledger.

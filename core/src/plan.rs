//! The plan: a pure diff of the desired state against the ledger.

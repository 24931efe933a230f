//! The ledger: timctl's memory of what it has deleted.

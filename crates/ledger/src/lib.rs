//! Daemon records in a home's `data/`: each daemon's private decision state
//! ([`StateStore`], opened with the daemon's own `DaemonInfo`, reaching only its rows) and
//! the [`Ledger`] of facts that cross daemons (training checkpoints, exports and their
//! watermarks, the pipeline stage per config, promotions), each table written by one
//! owner and read by anyone through typed queries. A daemon that needs another's fact
//! reads the ledger (or the event that carried it), never the other's state.

mod facts;
mod state;

pub use facts::{
    Checkpoint, Export, ExportWriter, Ledger, LedgerError, Promotion, PromotionWriter, StageRecord,
    StageWriter, Table, TrainingWriter,
};
pub use state::{StateError, StateStore};

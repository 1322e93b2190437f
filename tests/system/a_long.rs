//! System tests of half a minute or more, grouped so that their names sort first: libtest
//! starts tests in name order, so these begin at once and the short tests fill the other
//! test thread around them instead of these forming the tail of the run.

mod cluster_queue;
mod delivery_scope;
mod external_trainer;
mod jetstream_cluster;
mod launcher_backoff;
mod launcher_endurance;
mod netns;
mod partition;
mod router_outage;
mod shipped_cluster;
mod training_loop;

//! `ringrift-event-router` binary: hands the service to handler-base.
fn main() -> std::process::ExitCode {
    handler_base::service_main(ringrift_event_router::INFO, ringrift_event_router::serve)
}

"""Pure rules and state of TaskFlux: queue names, records, priority structures, policies, the queue
manager (the replicated state machine) and the codecs of its log entries and snapshots. No I/O."""

"""The components facerec runs beside its own code (Kafka, PostgreSQL, Cassandra, ...), each
started from what ``make setup`` installed, on loopback ports, with a real readiness probe:
what the tests start, and what ``facerec stack`` runs on one machine."""

"""DR drills on a running deployment (SPEC OPS-2): a load of simulated users, a fault
injected, the operator's recovery steps, and a report of detection time, RTO, RPO,
failed requests and users not recovered, per step."""

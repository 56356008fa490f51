"""What load to drive: prompt sets with exact token lengths in the served tokenizer
(random, ShareGPT, shared prefixes, a user's JSONL), arrival schedules, and the Workload
that ties them together at full size for each host to scale."""

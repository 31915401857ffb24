"""Research labs that study the teacher towers: `niwt` (profile, bitmask, collapse). No Qt, CPU path for all."""

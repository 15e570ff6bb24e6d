"""Demo fixtures, not the method: the CPU quickstart, its synthetic toy task, a tiny random model,
a minimal supervised warm-up, and a small real instruct model for test-time search demos."""

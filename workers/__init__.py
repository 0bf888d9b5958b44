"""RQ job functions and schedules. Each job is idempotent, small and safe to retry."""

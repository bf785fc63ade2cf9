"""archiver: every user message and answer, masked, into date-partitioned volumes in the storage backend."""

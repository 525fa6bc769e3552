"""bombom-pipe: Postfix hands each message to `bombom-deliver`, which spools, parses and stores it.

Flow of one message (one module each):
    entry.main      tiny wrapper: nothing but 0, 67 or 75 ever leaves the process
    deliver.run     the steps, in order, under a deadline
    spool           raw bytes to disk, durably, named by SHA-256
    parse           bytes -> ParsedMessage (pure, no I/O)
    store           ParsedMessage -> PostgreSQL, idempotently
    outcomes        outcome -> (exit code, enhanced status) in one table
"""

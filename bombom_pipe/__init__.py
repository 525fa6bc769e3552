"""bombom-pipe: Postfix hands each message to `bombom-deliver`, which spools it and has it parsed
and stored by a process it can kill.

Flow of one message (one module each):
    entry.main        tiny wrapper: nothing but 0, 67 or 75 ever leaves the process
    supervisor.run    save, hand over (bombom worker or a forked child), hold the deadline
    spool             raw bytes to disk, durably, named by SHA-256
    child / worker    the delivering processes (cold, warm), confined
    deliver           parse, then store, inside that process
    parse             bytes -> ParsedMessage (pure, no I/O)
    store             ParsedMessage -> PostgreSQL, idempotently
    outcomes          outcome -> (exit code, enhanced status) in one table
"""

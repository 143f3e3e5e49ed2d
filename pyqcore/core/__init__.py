"""The sans-I/O core: each Lua script's call (``calls``), partitions, and every multi-step flow
of the queue (``queue``), the worker (``slot``), the dead-letter queue (``dead_letters``) and
the registry (``registry``, ``manager``), written once as generators of effects
(``effects``) that a driver performs."""

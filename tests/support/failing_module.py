"""A site module with a bug that raises while it is imported, as ACTOR_KEYS or an inbox
class might name one."""

raise RuntimeError("the module is broken")

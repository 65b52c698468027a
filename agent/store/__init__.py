"""Everything the agent keeps on disk: the queue and its ledger, the command journal,
behind one SQLite boundary.
"""

"""The stages every file goes through: file rules, sidecar, tagger, intake, delivery.

Also the after-upload actions and the ``Runtime`` lent to the daemon's components.
"""

"""Where files come from: the watcher, the reconciliation scan, and captures the agent
makes itself (serial sensors, programs, triggered by MQTT commands or by hand).
"""

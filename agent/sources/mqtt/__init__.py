"""The MQTT link: capture commands in; their events and the fleet status document out."""

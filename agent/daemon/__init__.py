"""The long-running agent: lifecycle, components, systemd, health, metrics, disk, wake."""

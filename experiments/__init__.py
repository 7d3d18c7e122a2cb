"""absl-launched experiments built on the hpjax library (thin launchers)."""

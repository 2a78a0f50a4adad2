"""Quality control: geometry checks, data and noise warnings, metrics against a truth, report figures."""

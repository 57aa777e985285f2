"""`sluice-loadgen`: the study's load (its event mix, many tenants, steady, ramp, spike and soak
profiles) offered to a deployed Sluice at a constant arrival rate, and the end-to-end accounting
after it. The HTTP driver is compiled (loadgen/, Go) so that offering twice the study's rate
costs the controller little CPU; Python plans, makes the tenants' keys and checks."""

"""`pulumi up` runs this: read and check the stack config, declare the stack, export its outputs.

Everything lives in the modules beside it (config*, network, seed, sluice_vm, stack); the unit
tests (tests/unit/test_pulumi_*.py) run them under pulumi.runtime.Mocks.
"""

import config
import stack

import pulumi

try:
    settings = config.from_pulumi()
except config.ConfigError as error:
    # RunError: Pulumi prints the message (every problem, with its key and fix), no traceback.
    raise pulumi.RunError(str(error)) from None

for name, value in stack.build(settings).items():
    pulumi.export(name, value)

"""Memristor crossbar simulation: program a layer's bit planes onto simulated ReRAM tiles
(Synaptogen device model) and run it through DAC, analog read and ADC."""

from mho.simulator.crossbar import (
    NOISE_MODES,
    ClipStats,
    CrossbarConfig,
    CrossbarLinear,
    DigitalLinear,
    dac_levels,
)
from mho.simulator.device import (
    DeviceConfig,
    ProgrammedChip,
    bit_planes,
    load_device_params,
    program_chip,
)

__all__ = [
    "NOISE_MODES",
    "ClipStats",
    "CrossbarConfig",
    "CrossbarLinear",
    "DeviceConfig",
    "DigitalLinear",
    "ProgrammedChip",
    "bit_planes",
    "dac_levels",
    "load_device_params",
    "program_chip",
]

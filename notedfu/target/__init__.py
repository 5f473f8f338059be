"""The target side: STM32 ROM-bootloader flashing, line control, external tool backends."""

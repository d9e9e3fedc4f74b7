"""Tests of the CPU backend (model/cpu/): every piece equal to the reference piece it replaces, forward and
backward, each speed-up switch on and off."""

//! Kernel report parsing for daxdiff.

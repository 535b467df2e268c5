//! ISO/IEC 7816 encodings shared by the card client (`cps-card`) and the card simulator
//! (`firmware-sim`): BER-TLV as the PIV card edge uses it.

#![forbid(unsafe_code)]

pub mod tlv;

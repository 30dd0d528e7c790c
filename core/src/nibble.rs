//! Signed 4-bit values two to a byte, as the 4-bit text encoder matrices and
//! the index's refinement codes store them: `v` in −7..=7 as `v + 8`, the even
//! element in the low nibble. The nibble 0 (−8, which has no positive twin) is
//! never written and is invalid when read.

/// `low` and `high` (each in −7..=7) in one byte.
pub(crate) fn pack(low: i8, high: i8) -> u8 {
    debug_assert!((-7..=7).contains(&low) && (-7..=7).contains(&high), "4-bit values are −7..=7: {low}, {high}");
    (low + 8) as u8 | ((high + 8) as u8) << 4
}

/// The two values of `byte`, low nibble first.
pub(crate) fn unpack(byte: u8) -> [i8; 2] {
    [(byte & 0x0f) as i8 - 8, (byte >> 4) as i8 - 8]
}

/// The first byte of `bytes` holding the invalid nibble 0.
pub(crate) fn first_invalid(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&byte| byte & 0x0f == 0 || byte >> 4 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_zero_nibbles_are_found() {
        for low in -7..=7 {
            for high in -7..=7 {
                let byte = pack(low, high);
                assert_eq!(unpack(byte), [low, high]);
                assert_eq!(first_invalid(&[byte]), None);
            }
        }
        assert_eq!(pack(0, 0), 0x88);
        assert_eq!(first_invalid(&[0x88, 0x80, 0x08]), Some(1));
        assert_eq!(first_invalid(&[0x88, 0x08]), Some(1));
    }
}

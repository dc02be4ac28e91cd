//! When a certificate is valid, read from its DER (RFC 5280, 4.1.2.5).
//!
//! `verify` needs it: time is the one input of webpki's verdict on a
//! chain that changes while the chain's bytes stay the same. A short walk
//! suffices: Certificate, TBSCertificate, past version, serial number,
//! signature and issuer, to Validity, where webpki reads it too. It is no
//! validator: webpki has already judged every certificate on the path,
//! and one the server sent besides can only narrow the window. What the
//! walk does not expect gives None, and the chain is then verified in
//! full on every run.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, absent in v1 certificates.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A span of Unix seconds, both ends included, as webpki checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub not_before: u64,
    pub not_after: u64,
}

impl Window {
    pub fn contains(&self, unix_secs: u64) -> bool {
        (self.not_before..=self.not_after).contains(&unix_secs)
    }

    /// The span in which both are valid (empty when they do not overlap).
    pub fn and(self, other: Window) -> Window {
        Window {
            not_before: self.not_before.max(other.not_before),
            not_after: self.not_after.min(other.not_after),
        }
    }
}

/// The validity of the certificate `der`, or None if it cannot be read.
pub fn of(der: &[u8]) -> Option<Window> {
    let (certificate, _) = tagged(der, SEQUENCE)?;
    let (tbs, _) = tagged(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = tagged(rest, INTEGER)?;
    let (_signature, rest) = tagged(rest, SEQUENCE)?;
    let (_issuer, rest) = tagged(rest, SEQUENCE)?;
    let (validity, _) = tagged(rest, SEQUENCE)?;
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    let not_after = time(tag, not_after)?;
    Some(Window {
        not_before,
        not_after,
    })
}

/// The contents of a TLV that must carry `tag`, and what follows it.
fn tagged(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// Splits one tag-length-value off the front: tag, contents, the rest.
/// Low tag numbers and definite lengths only, as DER has them here.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: up to four length bytes, which fit any usize here.
        let count = usize::from(first & 0x7f);
        if !(1..=4).contains(&count) {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let length = bytes
            .iter()
            .fold(0u64, |length, &byte| length << 8 | u64::from(byte));
        (usize::try_from(length).ok()?, rest)
    };
    let (contents, rest) = rest.split_at_checked(length)?;
    Some((tag, contents, rest))
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950 to 2049) or `YYYYMMDDHHMMSSZ`
/// (GeneralizedTime): the only forms RFC 5280 allows, as Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<u64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let year = number(&text[..2])?;
            (
                if year < 50 { 2000 + year } else { 1900 + year },
                &text[2..],
            )
        }
        (GENERALIZED_TIME, 15) => (number(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' || year < 1970 {
        return None;
    }
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| number(&rest[at..at + 2]));
    let (month, day) = (month?, day?);
    let (hour, minute, second) = (hour?, minute?, second?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_since_epoch(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// ASCII digits as a number; None for anything else.
fn number(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0, |value, &digit| {
        digit
            .is_ascii_digit()
            .then(|| value * 10 + u64::from(digit - b'0'))
    })
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (from 1970 on). Years are counted from March, so the leap day ends a
/// year and the days before each month follow one formula; a 400-year era
/// is 146,097 days.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719,468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    fn cert_valid(from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(to.0, to.1, to.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn dates_become_unix_seconds() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 1, 1) * 86_400, 946_684_800);
        assert_eq!(days_since_epoch(2024, 2, 29) * 86_400, 1_709_164_800);
        assert_eq!(days_since_epoch(2024, 3, 1) * 86_400, 1_709_251_200);
        assert_eq!(days_since_epoch(2100, 3, 1) * 86_400, 4_107_542_400);
        assert_eq!(
            time(UTC_TIME, b"491231235959Z"),
            Some(2_524_607_999),
            "UTCTime 49 is 2049"
        );
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"240229000000Z"), Some(1_709_164_800));
        assert_eq!(
            time(GENERALIZED_TIME, b"20000229000000Z"),
            Some(951_782_400)
        );
        assert_eq!(
            time(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2_524_608_000)
        );
    }

    #[test]
    fn both_time_forms_are_read_from_a_certificate() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime after, as
        // RFC 5280 asks.
        let der = cert_valid((2001, 2, 3), (2061, 12, 31));
        let window = of(&der).unwrap();
        let expected_from = date_time_ymd(2001, 2, 3).unix_timestamp() as u64;
        let expected_to = date_time_ymd(2061, 12, 31).unix_timestamp() as u64;
        assert_eq!(
            window,
            Window {
                not_before: expected_from,
                not_after: expected_to
            }
        );
        assert!(window.contains(expected_from) && window.contains(expected_to));
        assert!(!window.contains(expected_from - 1) && !window.contains(expected_to + 1));
    }

    #[test]
    fn every_truncation_and_a_flipped_byte_are_refused_without_panic() {
        let der = cert_valid((2020, 1, 1), (2030, 1, 1));
        assert!(of(&der).is_some());
        for end in 0..der.len() {
            // The outer length no longer matches: nothing is read.
            assert_eq!(of(&der[..end]), None, "cut at {end}");
        }
        for at in 0..der.len().min(400) {
            let mut bad = der.clone();
            bad[at] ^= 0xff;
            let _ = of(&bad);
        }
    }

    #[test]
    fn malformed_times_are_refused() {
        for (tag, text) in [
            (UTC_TIME, &b"2001010000000Z"[..]),
            (UTC_TIME, b"0101010000000"),
            (UTC_TIME, b"01010100000Z0"),
            (UTC_TIME, b"011301000000Z"),
            (UTC_TIME, b"010100000000Z"),
            (UTC_TIME, b"250231000000Z"),
            (UTC_TIME, b"250431000000Z"),
            (UTC_TIME, b"250229000000Z"),
            (GENERALIZED_TIME, b"21000229000000Z"),
            (UTC_TIME, b"010101240000Z"),
            (UTC_TIME, b"01010100006 Z"),
            (GENERALIZED_TIME, b"19691231235959Z"),
            (GENERALIZED_TIME, b"2001010100000Z"),
            (SEQUENCE, b"20010101000000Z"),
        ] {
            assert_eq!(time(tag, text), None, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn windows_meet_where_both_hold() {
        let a = Window {
            not_before: 10,
            not_after: 20,
        };
        let b = Window {
            not_before: 15,
            not_after: 30,
        };
        assert_eq!(
            a.and(b),
            Window {
                not_before: 15,
                not_after: 20
            }
        );
        let apart = a.and(Window {
            not_before: 21,
            not_after: 40,
        });
        assert!(!apart.contains(20) && !apart.contains(21));
    }
}

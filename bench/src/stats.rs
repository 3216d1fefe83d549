//! min / median / max of a run's figures.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// None for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
            n,
        })
    }

    /// `min / median / max` with `fmt` for each; one value alone when all three are equal.
    pub fn show(&self, fmt: impl Fn(f64) -> String) -> String {
        let (a, b, c) = (fmt(self.min), fmt(self.median), fmt(self.max));
        if a == b && b == c {
            a
        } else {
            format!("{a} / {b} / {c}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn show_collapses_equal_values() {
        let f = |x: f64| format!("{x:.0}");
        assert_eq!(Spread::of(&[0.0, 0.0]).unwrap().show(f), "0");
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0]).unwrap().show(f), "1 / 2 / 3");
    }
}

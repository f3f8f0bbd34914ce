//! Choosing the next token from logits, in llama.cpp's order: logit bias, penalties (repeat,
//! frequency, presence), top-k, top-p, min-p, temperature, then a draw from a seeded generator
//! (or argmax at temperature 0).

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) means greedy: always the most likely token.
    pub temperature: f32,
    /// 0 keeps every candidate.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// 1.0 is off.
    pub repeat_penalty: f32,
    /// How many of the latest tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted from a seen token's logit once per time it was seen (0.0 is off).
    pub frequency_penalty: f32,
    /// Subtracted from a seen token's logit once, however often it was seen (0.0 is off).
    pub presence_penalty: f32,
    /// Added to these tokens' logits before anything else; -inf bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0xFFFF_FFFF,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    recent: VecDeque<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: SplitMix64(params.seed),
            recent: VecDeque::with_capacity(params.repeat_last_n),
            params,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token the model has seen (prompt or generated) for the repeat penalty.
    pub fn accept(&mut self, token: u32) {
        if self.params.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.params.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        match self.sample_constrained(logits, &mut Unconstrained(logits.len())) {
            Ok(Some(token)) => token,
            Ok(None) => unreachable!("with no constraint every token is allowed"),
            Err(never) => match never {},
        }
    }

    /// Samples among the tokens `constraint` allows, as if every other token had been removed
    /// before the chain ran; None when it allows none.
    pub fn sample_constrained<C: Constraint>(
        &mut self,
        logits: &[f32],
        constraint: &mut C,
    ) -> Result<Option<u32>, C::Error> {
        let mut logits = logits.to_vec();
        for &(id, bias) in &self.params.logit_bias {
            if let Some(logit) = logits.get_mut(id as usize) {
                *logit += bias;
            }
        }
        self.apply_penalties(&mut logits);
        if self.params.temperature <= 0.0 {
            let best = argmax(&logits);
            if constraint.allows(best)? {
                return Ok(Some(best));
            }
            let candidates = most_likely_allowed(&logits, 1, constraint)?;
            return Ok(candidates.first().map(|c| c.0));
        }
        // With top-k the candidates come sorted; without, they stay as the constraint lists
        // them and only the part top-p and min-p can keep is ever sorted.
        let mut candidates = match self.params.top_k {
            0 => allowed_candidates(&logits, constraint)?,
            k => most_likely_allowed(&logits, k, constraint)?,
        };
        let Some(max) = candidates.iter().map(|c| c.1).reduce(f32::max) else {
            return Ok(None);
        };
        // Min-p keeps what is at least min_p times as likely as the best: a floor on the logit.
        let floor = match self.params.min_p {
            p if p > 0.0 && !max.is_nan() => max + p.ln(),
            _ => f32::NEG_INFINITY,
        };
        // Written so that NaN logits (a broken model) are kept rather than leaving nothing.
        let above_floor = |c: &(u32, f32)| c.1 >= floor || c.1.is_nan();
        if self.params.top_p < 1.0 {
            // Top-p's probabilities are over every candidate, so the sum is taken before the
            // floor removes any; whatever lies under the floor would go after top-p anyway.
            let sum: f32 = candidates.iter().map(|c| (c.1 - max).exp()).sum();
            candidates.retain(above_floor);
            keep_top_p(&mut candidates, max, sum, self.params.top_p);
        } else if self.params.min_p > 0.0 {
            candidates.retain(above_floor);
        }
        for candidate in &mut candidates {
            candidate.1 /= self.params.temperature;
        }
        let probs = softmax(&candidates);
        let mut target = self.rng.next_f64() as f32;
        for (candidate, p) in candidates.iter().zip(&probs) {
            if target < *p {
                return Ok(Some(candidate.0));
            }
            target -= p;
        }
        Ok(candidates.last().map(|c| c.0))
    }

    /// The penalties on recent tokens, as llama.cpp's penalties sampler: the repeat penalty
    /// divides positive logits and multiplies negative ones (so a repeated token always
    /// becomes less likely), then the frequency penalty is taken once per occurrence and the
    /// presence penalty once.
    fn apply_penalties(&self, logits: &mut [f32]) {
        let SamplingParams {
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            ..
        } = self.params;
        if repeat_penalty == 1.0 && frequency_penalty == 0.0 && presence_penalty == 0.0 {
            return;
        }
        let mut seen: Vec<u32> = self.recent.iter().copied().collect();
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a == b) {
            let Some(logit) = logits.get_mut(run[0] as usize) else {
                continue;
            };
            *logit = if *logit > 0.0 {
                *logit / repeat_penalty
            } else {
                *logit * repeat_penalty
            };
            *logit -= run.len() as f32 * frequency_penalty + presence_penalty;
        }
    }
}

/// What may be sampled next, asked of single tokens or of the whole vocabulary at once (which
/// a grammar answers far faster than token by token).
pub trait Constraint {
    type Error;
    fn allows(&mut self, token: u32) -> Result<bool, Self::Error>;
    /// Every allowed token, each once, in any order.
    fn allowed(&mut self) -> Result<Vec<u32>, Self::Error>;
}

/// Every token of a vocabulary of this size.
struct Unconstrained(usize);

impl Constraint for Unconstrained {
    type Error = std::convert::Infallible;

    fn allows(&mut self, _: u32) -> Result<bool, Self::Error> {
        Ok(true)
    }

    fn allowed(&mut self) -> Result<Vec<u32>, Self::Error> {
        Ok((0..self.0 as u32).collect())
    }
}

/// Descending logit, the lowest id first among equals: a total order, so the top `k` found by
/// selection are the same as by a full sort.
fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `wanted` (at least one) most likely allowed tokens, best first. The likeliest few are
/// asked about one by one, as most of them pass under most grammars; only when too few do is
/// the whole vocabulary asked.
fn most_likely_allowed<C: Constraint>(
    logits: &[f32],
    wanted: usize,
    constraint: &mut C,
) -> Result<Vec<(u32, f32)>, C::Error> {
    let look = (wanted * 4 + 60).min(logits.len());
    let mut candidates: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(id, &logit)| (id as u32, logit))
        .collect();
    if look < candidates.len() {
        candidates.select_nth_unstable_by(look - 1, by_rank);
        candidates.truncate(look);
    }
    candidates.sort_unstable_by(by_rank);
    let mut kept = Vec::with_capacity(wanted);
    for candidate in candidates {
        if constraint.allows(candidate.0)? {
            kept.push(candidate);
            if kept.len() == wanted {
                return Ok(kept);
            }
        }
    }
    if look == logits.len() {
        return Ok(kept);
    }
    let mut candidates = allowed_candidates(logits, constraint)?;
    if wanted < candidates.len() {
        candidates.select_nth_unstable_by(wanted - 1, by_rank);
        candidates.truncate(wanted);
    }
    candidates.sort_unstable_by(by_rank);
    Ok(candidates)
}

/// Every allowed token with its logit.
fn allowed_candidates<C: Constraint>(
    logits: &[f32],
    constraint: &mut C,
) -> Result<Vec<(u32, f32)>, C::Error> {
    Ok(constraint
        .allowed()?
        .iter()
        .filter_map(|&id| Some((id, *logits.get(id as usize)?)))
        .collect())
}

/// Sorts `candidates` and keeps the likeliest ones whose probabilities (`exp(logit - max) /
/// sum`) reach `top_p`. A few hundred tokens usually carry that mass, so the likeliest are
/// selected and sorted in growing batches rather than sorting a whole vocabulary.
fn keep_top_p(candidates: &mut Vec<(u32, f32)>, max: f32, sum: f32, top_p: f32) {
    let mut batch = 256;
    loop {
        let whole = batch >= candidates.len();
        let end = if whole {
            candidates.sort_unstable_by(by_rank);
            candidates.len()
        } else {
            candidates.select_nth_unstable_by(batch - 1, by_rank);
            candidates[..batch].sort_unstable_by(by_rank);
            batch
        };
        let mut cumulative = 0.0;
        let reached = candidates[..end].iter().position(|c| {
            cumulative += (c.1 - max).exp() / sum;
            cumulative >= top_p
        });
        if let Some(last) = reached {
            candidates.truncate(last + 1);
            return;
        }
        if whole {
            return;
        }
        batch *= 8;
    }
}

/// The lowest id wins a tie, as in llama.cpp's greedy sampler.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probabilities of the candidates, in their order.
fn softmax(candidates: &[(u32, f32)]) -> Vec<f32> {
    let max = candidates
        .iter()
        .map(|c| c.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A small, well-mixed generator: enough for sampling, and the same seed gives the same text on
/// every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut sampler = Sampler::new(params(0.0));
        assert_eq!(sampler.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut sampler = Sampler::new(SamplingParams {
                seed,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.5,
                ..SamplingParams::default()
            });
            (0..40).map(|_| sampler.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut sampler = Sampler::new(SamplingParams {
            top_k: 1,
            temperature: 5.0,
            ..SamplingParams::default()
        });
        for _ in 0..20 {
            assert_eq!(sampler.sample(&[1.0, 1.5, 0.2]), 1);
        }
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        let mut sampler = Sampler::new(SamplingParams {
            min_p: 0.5,
            top_k: 0,
            top_p: 1.0,
            temperature: 1.0,
            ..SamplingParams::default()
        });
        // Token 1 has probability ratio e^-3 to token 0: below min_p, never drawn.
        for _ in 0..200 {
            assert_eq!(sampler.sample(&[0.0, -3.0]), 0);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let mut sampler = Sampler::new(SamplingParams {
            top_p: 0.5,
            top_k: 0,
            min_p: 0.0,
            temperature: 1.0,
            ..SamplingParams::default()
        });
        for _ in 0..200 {
            assert_eq!(sampler.sample(&[2.0, 0.0, 0.0]), 0);
        }
    }

    #[test]
    fn repeat_penalty_discourages_recent_tokens() {
        let mut sampler = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..params(0.0)
        });
        sampler.accept(0);
        assert_eq!(sampler.sample(&[3.0, 2.0]), 1);
        let mut sampler = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            repeat_last_n: 1,
            ..params(0.0)
        });
        sampler.accept(0);
        sampler.accept(1);
        assert_eq!(sampler.sample(&[3.0, 2.0]), 0, "token 0 left the window");
    }

    #[test]
    fn frequency_and_presence_penalties_count_occurrences() {
        let sampler = |frequency_penalty, presence_penalty| {
            let mut sampler = Sampler::new(SamplingParams {
                frequency_penalty,
                presence_penalty,
                ..params(0.0)
            });
            [0, 0, 0, 1].into_iter().for_each(|t| sampler.accept(t));
            sampler
        };
        // Token 0 seen three times, token 1 once, token 2 never.
        let logits = [5.0, 4.5, 3.9];
        assert_eq!(sampler(0.0, 0.0).sample(&logits), 0);
        assert_eq!(sampler(0.3, 0.0).sample(&logits), 1, "5 - 0.9 < 4.5 - 0.3");
        assert_eq!(
            sampler(0.0, 1.2).sample(&logits),
            2,
            "both seen tokens lose 1.2"
        );
        assert_eq!(
            sampler(-1.0, 0.0).sample(&[4.0, 4.5, 3.9]),
            0,
            "a negative penalty rewards"
        );
    }

    #[test]
    fn logit_bias_moves_and_bans_tokens() {
        let mut sampler = Sampler::new(SamplingParams {
            logit_bias: vec![(0, f32::NEG_INFINITY), (2, 1.5), (99, 5.0)],
            ..params(0.0)
        });
        assert_eq!(
            sampler.sample(&[9.0, 2.0, 1.0]),
            2,
            "0 banned, 2 raised past 1"
        );
        let mut sampler = Sampler::new(SamplingParams {
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            ..params(1.0)
        });
        for _ in 0..200 {
            assert_ne!(sampler.sample(&[1.0, 1.0, 1.0]), 1);
        }
    }

    /// Top-p by growing batches keeps exactly what sorting everything and cutting keeps, for
    /// vocabularies and kept sets on both sides of the batch sizes (256, 2048, 16384).
    #[test]
    fn top_p_in_batches_keeps_what_a_full_sort_keeps() {
        let mut rng = SplitMix64(5);
        for n in [1, 2, 255, 256, 257, 2047, 2048, 2049, 20_000] {
            for (spread, top_p) in [
                (0.1, 0.95),
                (1.0, 0.9),
                (8.0, 0.5),
                (0.01, 0.999),
                (3.0, 1.0),
            ] {
                let logits: Vec<(u32, f32)> = (0..n)
                    .map(|id| (id, (rng.next_f64() as f32 - 0.5) * spread * 10.0))
                    .collect();
                let max = logits.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|c| (c.1 - max).exp()).sum();
                let mut expected = logits.clone();
                expected.sort_unstable_by(by_rank);
                let mut cumulative = 0.0;
                if let Some(last) = expected.iter().position(|c| {
                    cumulative += (c.1 - max).exp() / sum;
                    cumulative >= top_p
                }) {
                    expected.truncate(last + 1);
                }
                let mut kept = logits;
                keep_top_p(&mut kept, max, sum, top_p);
                assert_eq!(kept, expected, "n {n}, spread {spread}, top_p {top_p}");
            }
        }
    }
}

//! The fuzz targets on the stable toolchain, in the normal test run: every input of the
//! committed corpus (`fuzz/corpus/<target>/`), then a bounded, seeded random loop (mutations
//! of the corpus plus the characters that break config files) through the same
//! `dirhost::fuzzing` functions cargo-fuzz drives. Bounded by a count, not a time, so the
//! result does not depend on the machine's speed; the seed is printed for a replay
//! (`DIRHOST_FUZZ_SEED=…`).

use std::path::Path;

use dirhost::fuzzing::{TARGETS, run};

/// Random inputs per target.
const ITERATIONS: usize = 20_000;

/// Bytes and words that matter to the config files dirhost writes.
const DICT: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\0",
    b"\"",
    b"'",
    b"<",
    b">",
    b"#",
    b"%",
    b"${",
    b"}",
    b"$",
    b":",
    b";",
    b"\\",
    b"|",
    b"/",
    b"..",
    b".",
    b"@",
    b"+",
    b"=",
    b" ",
    b"\t",
    b"\x1b[",
    b"\xff",
    b"\xc3\xbc",
    b"{CRYPT}",
    b"$6$",
    b"$2y$10$",
    b"$argon2id$",
    b"v=spf1 ",
    b"v=DMARC1; p=",
    b"[PHP]",
    b"memory_limit = ",
    b"xn--",
    b"127.0.0.1",
    b"::1",
    b"true",
    b"false",
    b"Include ",
    b"${run{/bin/sh}}",
    b":include:",
    b"1G",
    b"Gi",
    b"e400",
    b"\xe2\x80\xa8",
];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(6) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let w = DICT[rng.below(DICT.len())];
                v.splice(i..i, w.iter().copied());
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = (i + rng.below(8)).min(v.len());
                v.drain(i..j);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let i = rng.below(v.len() + 1);
                v.splice(i..i, other.iter().copied());
            }
            4 => {
                let i = rng.below(v.len() + 1);
                let b = u8::try_from(rng.below(256)).unwrap();
                v.insert(i, b);
            }
            _ => {
                // Repeat a slice: long labels, long lines.
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    let chunk = v[i..].to_vec();
                    for _ in 0..rng.below(40) {
                        v.extend_from_slice(&chunk);
                    }
                }
            }
        }
    }
    v.truncate(8192);
    v
}

#[test]
fn fuzz_targets_corpus_and_bounded_random_inputs() {
    let seed: u64 = std::env::var("DIRHOST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d1e5_7000_0001);
    println!("seed {seed} (DIRHOST_FUZZ_SEED to replay)");
    // Every target has a committed corpus and a cargo-fuzz target file.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for t in TARGETS {
        assert!(
            root.join("fuzz_targets").join(format!("{t}.rs")).is_file(),
            "no fuzz/fuzz_targets/{t}.rs"
        );
        let seeds = corpus(t);
        assert!(!seeds.is_empty(), "empty corpus for {t}");
        for s in &seeds {
            run(t, s);
        }
        let mut rng = Rng(seed ^ (t.len() as u64) << 32 ^ u64::from(t.as_bytes()[0]));
        for i in 0..ITERATIONS {
            let input = mutate(&mut rng, &seeds);
            let r = std::panic::catch_unwind(|| run(t, &input));
            assert!(
                r.is_ok(),
                "target {t}, iteration {i}: property failed for input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        total += seeds.len() + ITERATIONS;
    }
    println!("fuzz fallback: {} targets, {total} inputs", TARGETS.len());
}

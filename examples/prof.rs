use rcfd::forest::*;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (f, s, t, n) = (args[0], args[1], args[2], args[3]);
    let mut forest = Forest::new(&ForestConfig { features: f, shingle_size: s, trees: t, ..Default::default() }).unwrap();
    let mut x = 88172645463325252u64;
    let mut g = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % 10000) as f32 / 2500.0 - 2.0 };
    let mut total = 0.0;
    for i in 0..n { let r: Vec<f32> = (0..f).map(|k| (10.0 * ((i + 7*k) as f64 * 0.05).sin()) as f32 + g()).collect(); total += forest.score_and_update(&r).unwrap(); }
    println!("{total}");
}

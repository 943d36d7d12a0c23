use sparq::{AttnParams, AttnScratch, Cpu, KvCache, KvCacheConfig, KvDtype};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map_or(1, |s| s.parse().unwrap());
    let layers: usize = args.get(2).map_or(1, |s| s.parse().unwrap());
    let ctx: usize = std::env::var("ZZ_CTX").map_or(4096, |s| s.parse().unwrap());
    for (geo, nh, nkv, hd) in [("smollm2", 9, 3, 64), ("llama8b", 32, 8, 128)] {
        for dtype in KvDtype::ALL {
            if let Some(f) = args.get(3) { if !format!("{dtype}/{geo}").contains(f.as_str()) { continue; } }
            let mut cache = KvCache::new(KvCacheConfig { n_layers: layers, n_kv_heads: nkv, head_dim: hd, block_size: 16, n_blocks: ctx / 16, max_seq_len: ctx, dtype }).unwrap();
            let seq = cache.new_sequence();
            cache.append(seq, ctx).unwrap();
            let k: Vec<f32> = (0..ctx * nkv * hd).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0)).collect();
            for l in 0..layers { cache.write(seq, l, 0, &k, &k).unwrap(); }
            let p = AttnParams::new(nh, nkv, hd);
            let q: Vec<f32> = (0..nh * hd).map(|i| (i % 13) as f32 / 13.0).collect();
            let mut out = vec![0f32; q.len()];
            let cpu = Cpu::new(threads).unwrap();
            let mut sc = AttnScratch::default();
            let mut best = f64::MAX;
            let mut times = vec![];
            for rep in 0..std::env::var("ZZ_REPS").map_or(4000, |s| s.parse().unwrap()) {
                let t = Instant::now();
                cpu.attention_decode(&cache, rep % layers, &[seq], &q, &mut out, &p, &mut sc).unwrap();
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            best = best.min(times[times.len() / 2]);
            let elems = (ctx * nkv * hd * 2) as f64;
            println!("{dtype}/{geo}: {:.1} µs  {:.2} Gelem/s per thread", best * 1e6, elems / best / 1e9 / threads as f64);
        }
    }
}

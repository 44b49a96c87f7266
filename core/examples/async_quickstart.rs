use polycache::{Cache, Expiry};
use std::time::Duration;

// Every operation has an awaitable twin; memory:// answers in place, redis:// over
// multiplexed connections, file:// and sqlite:// on polycache's blocking pool.
#[tokio::main]
async fn main() -> polycache::Result<()> {
    let cache = Cache::builder("memory://").key_prefix("app").build()?;

    cache
        .set_async("greeting", b"hello", Expiry::Default)
        .await?;
    assert_eq!(
        cache.get_async("greeting").await?.as_deref(),
        Some(&b"hello"[..])
    );

    // 100 tasks miss one key at once: the loader runs once (single-flight).
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_set_with_async(
                        "report",
                        || async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(b"expensive".to_vec())
                        },
                        Expiry::After(Duration::from_secs(60)),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(&*t.await.expect("task")?, b"expensive");
    }
    println!("refreshes={}", cache.stats().refreshes);
    Ok(())
}

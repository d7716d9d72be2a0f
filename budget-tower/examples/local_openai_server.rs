//! Runs the local OpenAI-compatible server for demos and manual testing.
//!
//! ```text
//! cargo run -p budget-tower --example local_openai_server -- [PORT] [--forever]
//! ```
//!
//! Listens on `127.0.0.1:PORT` (default 8089) and serves `POST /v1/chat/completions` and
//! `GET /v1/models` until standard input is closed (press Ctrl-D, or Ctrl-C to kill it). When
//! standard input is not a terminal you control (e.g. started in the background with
//! `< /dev/null`), pass `--forever` and stop it by killing the process.
//!
//! Try it:
//!
//! ```text
//! curl -s http://127.0.0.1:8089/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"max_tokens":12}'
//! ```

use std::io::BufRead;

use budget_tower::local_server::LocalServer;

const DEFAULT_PORT: u16 = 8089;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = DEFAULT_PORT;
    let mut forever = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--forever" => forever = true,
            other => {
                port = other
                    .parse()
                    .map_err(|_| format!("expected a port number or --forever, got {other:?}"))?;
            }
        }
    }

    budget_core::Encoding::warm_up();
    let server = LocalServer::builder()
        .port(port)
        .served_model("gpt-4o", "gpt-4o-2024-08-06")
        .served_model("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
        .models(["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3"])
        .start()
        .await?;
    println!("local OpenAI-compatible server on {}", server.base_url());

    if forever {
        std::future::pending::<()>().await;
    }
    println!("close standard input (Ctrl-D) to stop it");
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await?;

    let received = server.requests_received();
    server.shutdown().await?;
    println!("stopped after {received} chat requests");
    Ok(())
}

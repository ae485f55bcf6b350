// The data plane allocates small buffers at millions per second (event
// values, keys, output records) across threads; mimalloc does this markedly
// faster than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::cli::main()
}

fn main() -> std::process::ExitCode {
    k3s_asg_coordinator::cli::main()
}

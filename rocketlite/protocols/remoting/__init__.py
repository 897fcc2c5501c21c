"""RocketMQ classic remoting (4.x TCP protocol): NameServer and Broker roles. See docs/remoting.md."""

if header :contains "subject" "hello" { discard; stop; }
keep;

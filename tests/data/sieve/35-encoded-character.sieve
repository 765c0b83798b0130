require ["fileinto", "encoded-character"];
if header :contains "subject" "${hex:48 65}llo" { fileinto "${unicode:0041}ncoded"; }

require ["fileinto", "mailbox"];
fileinto :create "Projects/New";
